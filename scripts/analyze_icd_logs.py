import sys
from icd.cli.main import main
sys.exit(main(["logs", *sys.argv[1:]]))
