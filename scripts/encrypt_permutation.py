import sys
from icd.cli.main import main
sys.exit(main(["encrypt", *sys.argv[1:]]))
