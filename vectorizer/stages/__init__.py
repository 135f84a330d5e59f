"""The row stages of a vectorizer: load → parse → chunk → format (embedding lives elsewhere).

Each stage is picked from its config's `implementation` through a registry in its own module;
`pipeline.RowPipeline` composes them for one vectorizer. This package imports nothing itself,
so importing one stage module does not pull in every other.
"""
