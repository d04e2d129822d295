

rds_routes9
all*
	/health:È

/
c2upstream.internal