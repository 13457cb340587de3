"""``python -m cdb.ml_advisor``."""

from cdb.core.runner import main
from cdb.ml_advisor.service import MlAdvisor
from cdb.ml_advisor.settings import MlAdvisorSettings

if __name__ == "__main__":
    main(MlAdvisor, MlAdvisorSettings)
