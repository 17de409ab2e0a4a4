"""The console driver: writes the message to the log of whoever runs the node."""
from __future__ import annotations

import logging

from apps.notify.base import NOTICE_LABELS, Delivery, Driver, Message, drivers

logger = logging.getLogger("apps.notify.console")


@drivers.register("console")
class ConsoleDriver(Driver):
    name = "console"

    def send(self, *, message: Message, config: dict) -> list[Delivery]:
        """Logs the title and body at INFO on ``apps.notify.console``, a notice's
        title after its kind (``Resolved notice: [RESOLVED] ...``)."""
        if message.notice:
            logger.info("%s notice: %s\n%s", NOTICE_LABELS[message.notice], message.title, message.body)
        else:
            logger.info("%s\n%s", message.title, message.body)
        return [Delivery(self.name, True, "written to log")]
