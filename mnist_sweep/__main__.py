from mnist_sweep.cli.main import entry

entry()
