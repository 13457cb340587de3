from cdb.console.service import Console
from cdb.console.settings import ConsoleSettings
from cdb.core.runner import main

if __name__ == "__main__":
    main(Console, ConsoleSettings)
