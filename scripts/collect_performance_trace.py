import sys
from icd.cli.main import main
if __name__ == "__main__":  # load workers are spawned and re-import this file
    sys.exit(main(["trace", "collect", *sys.argv[1:]]))
