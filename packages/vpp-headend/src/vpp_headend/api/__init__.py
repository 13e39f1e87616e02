"""REST API: thin Litestar controllers over the headend's services (DESIGN.md §5)."""
