import sys

from algotrading.cli import main

sys.exit(main())
