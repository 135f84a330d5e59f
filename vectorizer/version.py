"""The package's version, in a module of its own: modules that need it do not import the
package's `__init__` (which reaches back into them for its public API)."""

__version__ = "0.1.0"

# The pgai library version whose SQL surface and config format we reproduce. It is written
# into each vectorizer's config (`version`) so pgai's own worker can read our catalog.
PGAI_COMPAT_VERSION = "0.12.1"
