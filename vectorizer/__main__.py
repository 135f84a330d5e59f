import sys

from vectorizer.cli import main

sys.exit(main())
