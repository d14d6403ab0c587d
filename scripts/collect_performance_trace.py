import sys
from icd.cli.main import main
sys.exit(main(["trace", "collect", *sys.argv[1:]]))
