from cdb.core.runner import main
from cdb.signal_engine.service import SignalEngine
from cdb.signal_engine.settings import SignalEngineSettings

if __name__ == "__main__":
    main(SignalEngine, SignalEngineSettings)
