# The aiodimse embedded archive (storage + query/retrieve SCP) as a container.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aiodimse ./aiodimse
RUN pip install --no-cache-dir . && rm -rf /src
WORKDIR /
VOLUME /data
EXPOSE 11112
CMD ["aiodimse", "qrscp", "--config", "/etc/aiodimse/qrscp.toml", "-v"]
