"""The symmetric parse/generate model: story sentences <-> facts (entity, relation, value).

stories.py  seeded story generator          data.py     JSONL loader, vocabulary, tensors
net.py      parser, generator, rule bank    loss.py     the cross-entropy components
metrics.py  per-field evaluation            model.py    SymmetricModel (the factory) and its Config
"""
