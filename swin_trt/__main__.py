import sys

from swin_trt.cli import main

sys.exit(main())
