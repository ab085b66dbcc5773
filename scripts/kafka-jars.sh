# Sourced: fetches the real Apache Kafka broker (KRaft) and its runtime dependencies from
# Maven Central once, into ~/.cache/pageview/kafka/libs, and sets $kafka_libs to that folder.
kafka_version=4.4.0
kafka_dir="${PAGEVIEW_CACHE:-$HOME/.cache/pageview}/kafka"
kafka_libs="$kafka_dir/libs"
if [ ! -f "$kafka_libs/kafka_2.13-$kafka_version.jar" ]; then
    echo "== fetching Apache Kafka $kafka_version into $kafka_libs"
    mkdir -p "$kafka_dir"
    cat >"$kafka_dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.pageview</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$kafka_version</version>
    </dependency>
  </dependencies>
</project>
POM
    rm -rf "$kafka_libs"
    mvn -q -B -f "$kafka_dir/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$kafka_libs" -DincludeScope=runtime
fi
