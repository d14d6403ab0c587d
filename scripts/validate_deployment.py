import sys
from icd.cli.main import main
sys.exit(main(["validate", *sys.argv[1:]]))
