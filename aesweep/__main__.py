from aesweep.cli import main

main()
