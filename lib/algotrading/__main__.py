import gc
import sys

gc.disable()  # importing pandas and friends makes objects that live to the end: no pass over them
from algotrading.cli import main  # noqa: E402

gc.enable()
sys.exit(main())
