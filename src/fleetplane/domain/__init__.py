"""Pure fleet rules: health, compatibility, drift, config hash and policy merges.

Nothing here imports web or storage code; every function is deterministic given its inputs.
"""
