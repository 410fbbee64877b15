import sys

from mbus_ports.cli import main

sys.exit(main())
