import sys
from icd.cli.main import main
sys.exit(main(["canary", "monitor", *sys.argv[1:]]))
