"""`dae` as torchrun's script, with rank 0 stopped as if by Ctrl-C right after the checkpoint of
epoch 2 (torchrun then stops the other ranks).  Used by tests/test_distributed.py."""

import sys

import dae.cli as cli

real_save = cli.save_checkpoint


def save_then_stop(path, model, generator, state, *args, **kwargs):
    real_save(path, model, generator, state, *args, **kwargs)
    if state.get("epoch") == 2:
        raise KeyboardInterrupt


cli.save_checkpoint = save_then_stop
sys.exit(cli.main(sys.argv[1:]))
