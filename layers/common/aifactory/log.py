"""The one Powertools logger; its level and service name come from POWERTOOLS_* variables.

Request headers hold client secrets: nothing in the Factory passes them to the logger.
"""

from aws_lambda_powertools import Logger

logger = Logger()
