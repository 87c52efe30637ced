"""Knowledge editors behind one registry (see compute/editors/base.py for the contract).

Importing this package registers every editor: ROME (with RECT as an option), MEMIT, AlphaEdit, FT-L, IKE.
"""

from compute.editors.base import (  # noqa: F401
    EDITORS,
    EditContext,
    EditorError,
    EditRequest,
    EditResult,
    apply_edit,
    get_editor,
    load_hparams,
    undo,
)
from compute.editors import ft, ike  # noqa: F401,E402  (importing registers FT-L and IKE)
from compute.editors import memit, rome  # noqa: F401,E402  (importing registers ROME and MEMIT)
from compute.editors import alphaedit  # noqa: F401,E402  (importing registers AlphaEdit)
