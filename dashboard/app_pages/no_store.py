"""Shown instead of every page when the store is missing or unreadable: what is wrong, how to fix it."""

import streamlit as st

from dashboard.data import public_mode, store_status
from dashboard.jobs import escape_markdown

path, error = store_status()
st.title("EditScope cannot open its results store")
if public_mode():  # a public visitor learns nothing about the server's files
    st.error("The results store could not be opened; the site's operator has to fix it.")
    st.stop()
st.error(escape_markdown(error or "The store could not be opened."))  # our own message about the operator's file
st.markdown(
    f"""
The dashboard reads **`{path}`** (set `EDITSCOPE_STORE` to show another file). To build a store from
scratch on this machine:

```bash
bash run.sh compute kb build                 # knowledge base -> new store
bash run.sh compute cases build --n 480      # balanced edit cases in all 16 rephrase types
bash run.sh compute knowledge measure --set smollm2-135m-n480-s0
```
"""
)
