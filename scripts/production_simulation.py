import sys
from icd.cli.main import main
sys.exit(main(["simulate", *sys.argv[1:]]))
