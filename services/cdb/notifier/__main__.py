from cdb.core.runner import main
from cdb.notifier.service import Notifier
from cdb.notifier.settings import NotifierSettings

if __name__ == "__main__":
    main(Notifier, NotifierSettings)
