import sys
from icd.cli.main import main
sys.exit(main(["trace", "analyze", *sys.argv[1:]]))
