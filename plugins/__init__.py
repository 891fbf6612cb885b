"""Built-in agents, written only against the public plugin API (`engine.agent`).

They double as the reference for plugin authors: see plugins/README.md.
"""
