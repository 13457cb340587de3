from cdb.core.runner import main
from cdb.execution_service.service import ExecutionService
from cdb.execution_service.settings import ExecutionSettings

if __name__ == "__main__":
    main(ExecutionService, ExecutionSettings)
