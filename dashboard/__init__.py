"""EditScope dashboard: a Streamlit app over the results store (read-only; never imports torch)."""
