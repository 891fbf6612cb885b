"""The in-process decision stages: blender, selector, risk. Each behaviour is a policy."""
