import sys
from icd.cli.main import main
sys.exit(main(["compress", *sys.argv[1:]]))
