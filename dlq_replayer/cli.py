import sys


def main(argv=None) -> int:
    print("dlq-replayer: not implemented yet", file=sys.stderr)
    return 2
