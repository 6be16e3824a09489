"""The triplet-loss embedding model (registry name ``triplet``).

data.py (synthetic / .npz / image folder, checks, splits), samplers.py (P×K and the users' old
interleaved loader), net.py (MLP or small CNN, L2-normalised), loss.py (distance -> miner ->
hinge -> reducer), metrics.py (recall@k, MAP@R), model.py (the config and the Model protocol).
"""
