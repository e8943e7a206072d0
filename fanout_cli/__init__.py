"""The tool layer: what drives the pipeline from outside.

The `fanout` command (`fanout_cli.cli`), the local runtimes (`fanout_cli.local`: the
embedded moto runtime, and MiniStack running the deployed stack), the dry run, spec
inference, test data, and the helpers the command-line tools share (the progress
display, one-line failures). It may import everything below it: the core (`fanout`) and
both Lambdas (`splitter`, `writer`), whose handlers the embedded runtime runs. Nothing
below imports it, and no Lambda asset contains it.
"""
