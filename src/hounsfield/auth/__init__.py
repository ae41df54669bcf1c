"""Users, roles and their credentials (issue 12): the domain side of logins; HTTP is ``web.auth``."""
