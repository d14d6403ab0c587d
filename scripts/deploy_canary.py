import sys
from icd.cli.main import main
sys.exit(main(["canary", "deploy", *sys.argv[1:]]))
