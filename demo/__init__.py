"""The demo: an invented world, its judge, its tiny models and the set-up of its project."""
