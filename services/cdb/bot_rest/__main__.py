from cdb.bot_rest.service import BotRest
from cdb.bot_rest.settings import BotRestSettings
from cdb.core.runner import main

if __name__ == "__main__":
    main(BotRest, BotRestSettings)
