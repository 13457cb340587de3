from cdb.bot_ws.service import BotWs
from cdb.bot_ws.settings import BotWsSettings
from cdb.core.runner import main

if __name__ == "__main__":
    main(BotWs, BotWsSettings)
