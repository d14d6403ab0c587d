import sys
from icd.cli.main import main
sys.exit(main(["export-triton", *sys.argv[1:]]))
