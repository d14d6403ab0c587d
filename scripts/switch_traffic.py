import sys
from icd.cli.main import main
sys.exit(main(["switch", *sys.argv[1:]]))
