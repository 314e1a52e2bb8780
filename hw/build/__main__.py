import sys

from hw.build.flow import main

sys.exit(main())
