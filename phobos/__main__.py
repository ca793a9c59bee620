import sys

from phobos.cli import main

sys.exit(main())
