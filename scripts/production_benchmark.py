import sys
from icd.cli.main import main
sys.exit(main(["bench", *sys.argv[1:]]))
