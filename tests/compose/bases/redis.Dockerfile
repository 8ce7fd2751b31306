# A stand-in for the official Redis image, from Debian bookworm's packages (tests/compose):
# user redis, data in /data, redis-server and redis-cli on the PATH.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir /data && chown redis:redis /data
WORKDIR /data
