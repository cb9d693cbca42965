"""`python -m hrnet_lib.book`: execute the notebooks for a run and build the book."""

import sys

from hrnet_lib.book.build import main

sys.exit(main())
