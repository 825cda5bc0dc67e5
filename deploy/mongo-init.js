// MongoDB runs this once, on its first start with an empty data volume (see docker-compose.yml):
// auxcord's own user, with readWrite on the auxcord database only, never the root account.
db.getSiblingDB("auxcord").createUser({
  user: "auxcord",
  pwd: process.env.MONGODB_PASSWORD,
  roles: [{ role: "readWrite", db: "auxcord" }],
});
