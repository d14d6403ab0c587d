import sys
from icd.cli.main import main
sys.exit(main(["ab", *sys.argv[1:]]))
