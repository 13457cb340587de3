from cdb.core.runner import main
from cdb.risk_manager.service import RiskManager
from cdb.risk_manager.settings import RiskManagerSettings

if __name__ == "__main__":
    main(RiskManager, RiskManagerSettings)
