from mnist_sweep.cli import entry

entry()
