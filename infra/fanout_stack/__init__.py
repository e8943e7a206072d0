"""The fanout CDK stack: one construct per concern, wired together in `stack.py`."""

from fanout_stack.config import StackConfig
from fanout_stack.stack import FanoutStack

__all__ = ["FanoutStack", "StackConfig"]
