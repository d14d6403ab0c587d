import sys
from icd.cli.main import main
sys.exit(main(["optimize-instances", *sys.argv[1:]]))
