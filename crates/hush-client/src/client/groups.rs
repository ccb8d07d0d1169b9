//! Groups (`spec/client.md`, "Groups"): state announced by admins over
//! pairwise sessions, a sender key per member device, and one sealed
//! body per group message for every member at once.

use hush_crypto::{
    ContentType, IdentityKey, SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord,
    seal_many_with,
};
use rand_core::Rng;
use zeroize::Zeroizing;

use super::{Client, ClientError, DEVICE, Event, Received};
use crate::content::{Body, Content, GroupId, GroupState, MessageId, SenderKeyBytes};
use crate::profile::{
    Group, Outgoing, Profile, ProfileError, Status, StoredMessage, Writes, now_ms,
};

/// What a group control message changes once it is stored, worked out
/// before the write (reads only).
#[derive(Default)]
pub(super) struct GroupWork {
    /// The group's new state.
    group: Option<Group>,
    /// This device's own sender-key record: `Some(None)` drops it.
    own_key: Option<Option<Zeroizing<Vec<u8>>>>,
    /// Another member's sender-key record.
    sender_key: Option<(GroupId, IdentityKey, Zeroizing<Vec<u8>>)>,
    /// Forget other members' sender keys of a group, except these.
    forget: Option<(GroupId, Vec<IdentityKey>)>,
    /// Pairwise sends to make once stored.
    then: Vec<(IdentityKey, Body)>,
    /// A group whose parked messages may now open.
    retry: Option<GroupId>,
    /// What to tell the user.
    event: Option<Event>,
}

impl GroupWork {
    /// Adds the changes to `writes`.
    pub(super) fn stage(&self, client: &mut Client, writes: &mut Writes) {
        if let Some(group) = &self.group {
            Profile::stage_group(writes, group);
        }
        if let (Some(own), Some(group)) = (&self.own_key, &self.group) {
            client.profile.stage_own_sender_key(
                &mut client.rng,
                writes,
                &group.id,
                own.as_deref().map(|v| v.as_slice()),
            );
        }
        if let Some((group, sender, record)) = &self.sender_key {
            client
                .profile
                .stage_sender_key(&mut client.rng, writes, group, sender, record);
        }
        if let Some((group, keep)) = &self.forget {
            Profile::stage_forget_sender_keys(writes, group, keep);
        }
    }

    /// The event, once stored.
    pub(super) fn event(&self) -> Option<Event> {
        self.event.clone()
    }
}

fn identities(keys: &[[u8; 32]]) -> Option<Vec<IdentityKey>> {
    keys.iter()
        .map(|k| IdentityKey::from_bytes(k).ok())
        .collect()
}

impl Client {
    /// Every group this device knows.
    pub async fn groups(&self) -> Result<Vec<Group>, ClientError> {
        Ok(self.profile.groups().await?)
    }

    /// The groups as stored, from the cache (loaded on first use: a
    /// group's member list takes a key check per member to load).
    pub(super) async fn known_groups(&mut self) -> Result<&[Group], ClientError> {
        if self.groups.is_none() {
            self.groups = Some(self.profile.groups().await?);
        }
        Ok(self.groups.as_deref().unwrap_or_default())
    }

    /// The stored group with this id.
    async fn known_group(&mut self, id: &GroupId) -> Result<Option<Group>, ClientError> {
        Ok(self
            .known_groups()
            .await?
            .iter()
            .find(|g| g.id == *id)
            .cloned())
    }

    /// Puts a group's state, as just stored, in the cache.
    fn cache_group(&mut self, group: &Group) {
        if let Some(cached) = self.groups.as_mut() {
            match cached.iter_mut().find(|g| g.id == group.id) {
                Some(g) => *g = group.clone(),
                None => cached.push(group.clone()),
            }
        }
    }

    /// The group this device is a member of with this name.
    async fn group(&mut self, name: &str) -> Result<Group, ClientError> {
        let mut found: Vec<Group> = self
            .known_groups()
            .await?
            .iter()
            .filter(|g| g.name == name && g.member)
            .cloned()
            .collect();
        match found.len() {
            0 => Err(ClientError::UnknownGroup(name.to_string())),
            1 => Ok(found.remove(0)),
            _ => Err(ClientError::AmbiguousGroup(name.to_string())),
        }
    }

    /// Creates a group of this device and the named contacts, with this
    /// device as its admin, and tells every member its state, pairwise.
    pub async fn create_group(
        &mut self,
        name: &str,
        member_names: &[String],
    ) -> Result<Group, ClientError> {
        if name.is_empty() || name.len() > crate::content::MAX_GROUP_NAME {
            return Err(ClientError::BadGroupName);
        }
        let mut members = vec![self.identity.public().clone()];
        for m in member_names {
            let contact = self.contact(m).await?;
            if contact.changed {
                return Err(ClientError::IdentityChanged(contact.name));
            }
            if !members.contains(&contact.identity) {
                members.push(contact.identity);
            }
        }
        if members.len() > crate::content::MAX_GROUP_MEMBERS {
            return Err(ClientError::TooManyMembers);
        }
        let mut id: GroupId = [0; 16];
        self.rng.fill_bytes(&mut id);
        let group = Group {
            id,
            name: name.to_string(),
            version: 1,
            members,
            admins: vec![self.identity.public().clone()],
            member: true,
            send_counter: 0,
        };
        let record = SenderKeyRecord::generate(&mut self.rng, id);
        let mut writes = Writes::default();
        Profile::stage_group(&mut writes, &group);
        self.profile.stage_own_sender_key(
            &mut self.rng,
            &mut writes,
            &id,
            Some(&record.to_bytes()),
        );
        self.profile.write(writes).await?;
        self.cache_group(&group);
        let update = Body::GroupUpdate(state_of(&group));
        for member in group.members.iter().skip(1) {
            let contact = self.contact_for(member).await?;
            self.queue_many(&contact, vec![update.clone()]).await?;
        }
        let _ = self.flush().await;
        Ok(group)
    }

    /// Encrypts a text once with this device's sender key of the group
    /// and sends it, one body, to every other member in one request.
    pub async fn send_group_text(
        &mut self,
        group: &str,
        text: &str,
    ) -> Result<MessageId, ClientError> {
        if text.is_empty() || text.len() > crate::content::MAX_TEXT {
            return Err(ClientError::BadText);
        }
        let mut group = self.group(group).await?;
        let others: Vec<IdentityKey> = group
            .members
            .iter()
            .filter(|m| *m != self.identity.public())
            .cloned()
            .collect();
        if others.is_empty() {
            return Err(ClientError::EmptyGroup(group.name));
        }
        let own = self
            .profile
            .own_sender_key(&group.id)
            .await?
            .ok_or_else(|| ClientError::Crypto("no sender key for this group".into()))?;
        let mut record =
            SenderKeyRecord::from_bytes(&own).map_err(|e| ProfileError::Damaged(e.to_string()))?;
        let given = self.give_key(&group, &others, &record).await?;
        let mut id: MessageId = [0; 16];
        self.rng.fill_bytes(&mut id);
        let now = now_ms();
        group.send_counter += 1;
        let content = Content {
            id,
            sent_at_ms: now,
            counter: group.send_counter,
            body: Body::Text(text.to_string()),
        };
        let plaintext = Zeroizing::new(content.to_bytes());
        let message = record
            .encrypt(&plaintext)
            .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let (body, slots) = seal_many_with(
            &mut self.rng,
            &mut self.agreements,
            &self.identity,
            DEVICE,
            &others,
            ContentType::SenderKey,
            &message.to_bytes(),
        )
        .map_err(|e| ClientError::Crypto(e.to_string()))?;
        let mut recipients = others.iter().map(|o| *o.as_bytes()).zip(slots);
        let Some((device_key, slot)) = recipients.next() else {
            return Err(ClientError::EmptyGroup(group.name));
        };
        let out = Outgoing {
            message_id: id,
            device_key,
            body: body.to_bytes(),
            slot,
            more: recipients.collect(),
            group: Some(group.id),
            first_attempt_ms: now,
            attempts: 0,
        };
        let stored = StoredMessage {
            id,
            contact: 0,
            outgoing: true,
            counter: group.send_counter,
            sent_at_ms: now,
            text: text.to_string(),
            status: Status::Sending,
            recalled: false,
            group: Some(group.id),
        };
        let mut writes = Writes::default();
        self.profile
            .stage_messages(&mut self.rng, &mut writes, &[(&stored, None)]);
        Profile::stage_outgoing(&mut writes, &[(0, out.clone())]);
        Profile::stage_group(&mut writes, &group);
        for (member, key_id, distribution) in &given {
            self.profile.stage_given_key(
                &mut self.rng,
                &mut writes,
                &group.id,
                member,
                *key_id,
                distribution,
            );
        }
        // Synced before it leaves, like a pairwise send: the chain moved.
        self.profile.stage_own_sender_key(
            &mut self.rng,
            &mut writes,
            &group.id,
            Some(&record.to_bytes()),
        );
        self.profile.write(writes).await?;
        self.cache_group(&group);
        self.fresh.push(out);
        let _ = self.flush().await;
        Ok(id)
    }

    /// Sends this device's current chain, pairwise, to the members who
    /// were not given it yet (new members, everyone after a rotation),
    /// ahead of a group message. Returns what each was given, to keep.
    async fn give_key(
        &mut self,
        group: &Group,
        others: &[IdentityKey],
        record: &SenderKeyRecord,
    ) -> Result<Vec<(IdentityKey, u32, Zeroizing<Vec<u8>>)>, ClientError> {
        let Some(current) = record.distribution() else {
            return Err(ClientError::Crypto(
                "no chain of our own in the sender key".into(),
            ));
        };
        let given = self
            .profile
            .given_current(&group.id, current.key_id)
            .await?;
        let mut out = Vec::new();
        for member in others {
            if given.contains(member.as_bytes()) {
                continue;
            }
            let contact = self.contact_for(member).await?;
            if contact.changed {
                continue;
            }
            let bytes = current.to_bytes();
            self.queue_many(
                &contact,
                vec![Body::SenderKey(SenderKeyBytes(bytes.clone()))],
            )
            .await?;
            out.push((member.clone(), current.key_id, bytes));
        }
        Ok(out)
    }

    /// A group's last `limit` messages, in order.
    pub async fn group_history(
        &mut self,
        group: &str,
        limit: u32,
    ) -> Result<(Group, Vec<StoredMessage>), ClientError> {
        let group = self.group(group).await?;
        let messages = self.profile.group_history(&group.id, limit).await?;
        Ok((group, messages))
    }

    /// Works out what a pairwise group control message from `sender`
    /// changes (reading only); anything not allowed changes nothing.
    pub(super) async fn group_work(
        &mut self,
        sender: &IdentityKey,
        sender_name: &str,
        body: &Body,
    ) -> Result<GroupWork, ClientError> {
        let mut work = GroupWork::default();
        match body {
            Body::GroupUpdate(state) => {
                let (Some(members), Some(admins)) =
                    (identities(&state.members), identities(&state.admins))
                else {
                    tracing::warn!("dropped a group update naming an invalid key");
                    return Ok(work);
                };
                let current = self.known_group(&state.id).await?;
                let current = current.as_ref();
                let allowed = match current {
                    Some(g) => {
                        state.version > g.version
                            && (g.admins.contains(sender)
                                || is_leave(g, sender, &members, &admins, &state.name))
                    }
                    None => admins.contains(sender) && members.contains(self.identity.public()),
                };
                if !allowed {
                    tracing::warn!("dropped a group update not from an admin, or not newer");
                    return Ok(work);
                }
                let group = Group {
                    id: state.id,
                    name: state.name.clone(),
                    version: state.version,
                    member: members.contains(self.identity.public()),
                    members,
                    admins,
                    send_counter: current.map_or(0, |g| g.send_counter),
                };
                work = self.membership_work(current, group).await?;
                if let Some(group) = &work.group {
                    work.event = Some(Event::Group {
                        group: group.name.clone(),
                        by: sender_name.to_string(),
                        member: group.member,
                    });
                }
            }
            Body::SenderKey(bytes) => {
                let Ok(distribution) = SenderKeyDistribution::try_from(bytes.0.as_slice()) else {
                    tracing::warn!("dropped a sender key that does not parse");
                    return Ok(work);
                };
                let group = distribution.group_id;
                let mut record = match self.profile.sender_key(&group, sender).await? {
                    Some(bytes) => SenderKeyRecord::from_bytes(&bytes)
                        .map_err(|e| ProfileError::Damaged(e.to_string()))?,
                    None => SenderKeyRecord::new(group),
                };
                if record.process(&distribution).is_err() {
                    tracing::warn!("dropped a sender key for another group");
                    return Ok(work);
                }
                work.sender_key = Some((group, sender.clone(), record.to_bytes()));
                work.retry = Some(group);
            }
            Body::SenderKeyRequest(group) => {
                let Some(g) = self.known_group(group).await? else {
                    return Ok(work);
                };
                if !g.member || !g.members.contains(sender) {
                    return Ok(work);
                }
                // What it was given before (it can open what was sent
                // with it), else the chain as it is now.
                if let Some(given) = self.profile.given_key(group, sender).await? {
                    work.then
                        .push((sender.clone(), Body::SenderKey(SenderKeyBytes(given))));
                } else if let Some(bytes) = self.profile.own_sender_key(group).await? {
                    let record = SenderKeyRecord::from_bytes(&bytes)
                        .map_err(|e| ProfileError::Damaged(e.to_string()))?;
                    work.then
                        .push((sender.clone(), distribution_body(&record)?));
                }
            }
            _ => {}
        }
        Ok(work)
    }

    /// What moving a group from `current` to `group` means for this
    /// device's keys: a first chain when it joins, a fresh one when anyone
    /// left (and the keys of those who left forgotten); everything
    /// dropped when it is no longer a member.
    async fn membership_work(
        &mut self,
        current: Option<&Group>,
        group: Group,
    ) -> Result<GroupWork, ClientError> {
        let mut work = GroupWork::default();
        if !group.member {
            // Removed: nothing of the group is readable any more.
            work.own_key = Some(None);
            work.forget = Some((group.id, Vec::new()));
            work.group = Some(group);
            return Ok(work);
        }
        let before: Vec<IdentityKey> = current.map(|g| g.members.clone()).unwrap_or_default();
        let removed = before.iter().any(|m| !group.members.contains(m));
        let record = match self.profile.own_sender_key(&group.id).await? {
            None => SenderKeyRecord::generate(&mut self.rng, group.id),
            Some(bytes) => {
                let mut record = SenderKeyRecord::from_bytes(&bytes)
                    .map_err(|e| ProfileError::Damaged(e.to_string()))?;
                if removed {
                    // Whoever left must not read what comes next.
                    record.rotate(&mut self.rng);
                }
                record
            }
        };
        // Members get the chain with this device's next group message
        // (`send_group_text`), not before: a group where few speak costs
        // few pairwise messages.
        work.own_key = Some(Some(record.to_bytes()));
        if removed {
            work.forget = Some((group.id, group.members.clone()));
        }
        work.retry = Some(group.id);
        work.group = Some(group);
        Ok(work)
    }

    /// Stores a change this device makes to a group and announces the
    /// new state to every member before and after, pairwise.
    async fn change_group(&mut self, current: Group, group: Group) -> Result<Group, ClientError> {
        let me = self.identity.public().clone();
        let mut told: Vec<IdentityKey> = group
            .members
            .iter()
            .chain(current.members.iter())
            .filter(|m| **m != me)
            .cloned()
            .collect();
        told.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        told.dedup();
        let work = self.membership_work(Some(&current), group.clone()).await?;
        let mut writes = Writes::default();
        work.stage(self, &mut writes);
        self.profile.write(writes).await?;
        self.cache_group(&group);
        let update = Body::GroupUpdate(state_of(&group));
        for member in &told {
            let contact = self.contact_for(member).await?;
            self.queue_many(&contact, vec![update.clone()]).await?;
        }
        let _ = self.flush().await;
        Ok(group)
    }

    /// The group, checked that this device is one of its admins.
    async fn admin_of(&mut self, name: &str) -> Result<Group, ClientError> {
        let group = self.group(name).await?;
        if !group.admins.contains(self.identity.public()) {
            return Err(ClientError::NotAdmin(group.name));
        }
        Ok(group)
    }

    /// Adds contacts to a group (admins only). They get the group's
    /// state and the members' current keys, so they read what is sent
    /// from now on and nothing from before.
    pub async fn group_add(
        &mut self,
        name: &str,
        member_names: &[String],
    ) -> Result<Group, ClientError> {
        let current = self.admin_of(name).await?;
        let mut group = current.clone();
        for m in member_names {
            let contact = self.contact(m).await?;
            if contact.changed {
                return Err(ClientError::IdentityChanged(contact.name));
            }
            if !group.members.contains(&contact.identity) {
                group.members.push(contact.identity);
            }
        }
        if group.members.len() > crate::content::MAX_GROUP_MEMBERS {
            return Err(ClientError::TooManyMembers);
        }
        group.version += 1;
        self.change_group(current, group).await
    }

    /// Removes a member from a group (admins only). Every remaining
    /// member starts a fresh sender key, so the removed one reads nothing
    /// sent after.
    pub async fn group_remove(&mut self, name: &str, member: &str) -> Result<Group, ClientError> {
        let current = self.admin_of(name).await?;
        let contact = self.contact(member).await?;
        if !current.members.contains(&contact.identity) {
            return Err(ClientError::NotAMember(contact.name, current.name));
        }
        if contact.identity == *self.identity.public() {
            return Err(ClientError::NotAMember(contact.name, current.name));
        }
        let mut group = current.clone();
        group.members.retain(|m| *m != contact.identity);
        group.admins.retain(|a| *a != contact.identity);
        group.version += 1;
        self.change_group(current, group).await
    }

    /// Renames a group (admins only).
    pub async fn group_rename(&mut self, name: &str, new_name: &str) -> Result<Group, ClientError> {
        if new_name.is_empty() || new_name.len() > crate::content::MAX_GROUP_NAME {
            return Err(ClientError::BadGroupName);
        }
        let current = self.admin_of(name).await?;
        let mut group = current.clone();
        group.name = new_name.to_string();
        group.version += 1;
        self.change_group(current, group).await
    }

    /// Leaves a group: the others drop this device and start fresh keys.
    /// The last admin to leave hands the role to the first remaining
    /// member.
    pub async fn group_leave(&mut self, name: &str) -> Result<Group, ClientError> {
        let current = self.group(name).await?;
        let me = self.identity.public().clone();
        let mut group = current.clone();
        group.members.retain(|m| *m != me);
        group.admins.retain(|a| *a != me);
        if group.admins.is_empty()
            && let Some(first) = group.members.first()
        {
            group.admins.push(first.clone());
        }
        group.member = false;
        group.version += 1;
        self.change_group(current, group).await
    }

    /// Makes the pairwise sends a stored group change calls for, and
    /// opens the group's parked messages that now can be. Returns their
    /// events.
    pub(super) async fn group_follow_up(
        &mut self,
        work: GroupWork,
    ) -> Result<Vec<Event>, ClientError> {
        if let Some(group) = &work.group {
            self.cache_group(group);
        }
        for (identity, body) in work.then {
            let contact = self.contact_for(&identity).await?;
            if contact.changed {
                continue;
            }
            self.queue_many(&contact, vec![body]).await?;
        }
        let mut events = Vec::new();
        if let Some(group) = work.retry {
            for (row, sender, message, seq) in self.profile.parked(&group).await? {
                match self.open_group(&sender, &message, seq, Some(row)).await? {
                    Opening::Stored(e) => events.extend(e),
                    Opening::Park => {}
                    Opening::Dropped => {
                        let mut writes = Writes::default();
                        Profile::stage_unpark(&mut writes, row);
                        self.profile.write_unsynced(writes).await?;
                    }
                }
            }
        }
        Ok(events)
    }

    /// Opens, checks, decrypts and stores a group message (a sender-key
    /// message in a sealed envelope) from `sender`. One whose sender key
    /// (or group) is not here yet is parked, and the sender asked for its
    /// key; one that can never be read (from outside the group, forged)
    /// is logged and dropped.
    pub(super) async fn receive_group(
        &mut self,
        sender: &IdentityKey,
        bytes: &[u8],
        seq: u64,
    ) -> Result<Vec<Event>, ClientError> {
        match self.open_group(sender, bytes, seq, None).await? {
            Opening::Stored(events) => Ok(events),
            Opening::Dropped => Ok(Vec::new()),
            Opening::Park => {
                let Ok(message) = SenderKeyMessage::try_from(bytes) else {
                    return Ok(Vec::new());
                };
                self.profile
                    .park(&message.group_id, sender, bytes, seq)
                    .await?;
                let known = self
                    .known_group(&message.group_id)
                    .await?
                    .is_some_and(|g| g.member);
                if known
                    && self
                        .profile
                        .ask_for_key(&message.group_id, sender, KEY_REQUEST_AGAIN_MS)
                        .await?
                {
                    let contact = self.contact_for(sender).await?;
                    if !contact.changed {
                        self.queue_many(&contact, vec![Body::SenderKeyRequest(message.group_id)])
                            .await?;
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    /// [`Self::receive_group`]'s work; `parked` is the row of a parked
    /// message being tried again (forgotten in the same write if it
    /// opens).
    async fn open_group(
        &mut self,
        sender: &IdentityKey,
        bytes: &[u8],
        seq: u64,
        parked: Option<i64>,
    ) -> Result<Opening, ClientError> {
        let Ok(message) = SenderKeyMessage::try_from(bytes) else {
            tracing::warn!(seq, "dropped a group message that does not parse");
            return Ok(Opening::Dropped);
        };
        let Some(group) = self.known_group(&message.group_id).await? else {
            // Its group's state may still be on its way.
            return Ok(Opening::Park);
        };
        if !group.member || !group.members.contains(sender) {
            tracing::warn!(seq, "dropped a group message from outside the group");
            return Ok(Opening::Dropped);
        }
        let Some(stored) = self.profile.sender_key(&group.id, sender).await? else {
            return Ok(Opening::Park);
        };
        let mut record = SenderKeyRecord::from_bytes(&stored)
            .map_err(|e| ProfileError::Damaged(e.to_string()))?;
        let plaintext = match record.decrypt(&message) {
            Ok(p) => Zeroizing::new(p),
            Err(hush_crypto::DecryptError::UnknownSenderKey { .. }) => return Ok(Opening::Park),
            Err(e) => {
                tracing::warn!(seq, error = %e, "dropped a group message that does not decrypt");
                return Ok(Opening::Dropped);
            }
        };
        let record_bytes = record.to_bytes();
        let mut writes = Writes::default();
        self.profile
            .stage_sender_key(&mut self.rng, &mut writes, &group.id, sender, &record_bytes);
        if let Some(row) = parked {
            Profile::stage_unpark(&mut writes, row);
        }
        let Ok(Content {
            body: Body::Text(text),
            id,
            sent_at_ms,
            counter,
        }) = Content::try_from(plaintext.as_slice())
        else {
            tracing::warn!(seq, "dropped a group message that is not a text");
            // Its key is used up all the same.
            self.profile.write_unsynced(writes).await?;
            return Ok(Opening::Stored(Vec::new()));
        };
        let contact = self.contact_for(sender).await?;
        let unchanged = writes.clone();
        Profile::stage_seen(&mut writes, &id);
        let stored = StoredMessage {
            id,
            contact: contact.id,
            outgoing: false,
            counter,
            sent_at_ms,
            text: text.clone(),
            status: Status::Sent,
            recalled: false,
            group: Some(group.id),
        };
        self.profile
            .stage_messages(&mut self.rng, &mut writes, &[(&stored, Some(seq))]);
        match self.profile.write_unsynced(writes).await {
            Ok(_) => {}
            Err(ProfileError::Duplicate) => {
                self.profile.write_unsynced(unchanged).await?;
                return Ok(Opening::Stored(Vec::new()));
            }
            Err(e) => return Err(e.into()),
        }
        self.receipts
            .entry(contact.name.clone())
            .or_default()
            .push(id);
        Ok(Opening::Stored(vec![Event::Message(Received {
            from: contact.name.clone(),
            address: contact.address().to_string(),
            id,
            text,
            sent_at_ms,
            counter,
            seq,
            group: Some(group.name),
        })]))
    }
}

/// How long before a member is asked again for a key it did not send.
const KEY_REQUEST_AGAIN_MS: u64 = 60_000;

/// What became of a group message.
enum Opening {
    /// Stored (its events; none if it was a duplicate or not a text).
    Stored(Vec<Event>),
    /// Waiting for its sender's key or its group.
    Park,
    /// Never readable.
    Dropped,
}

/// Whether `members`/`admins`/`name` is `group` with only `sender`, a
/// member but not an admin, gone: a member leaving, which needs no
/// admin.
fn is_leave(
    group: &Group,
    sender: &IdentityKey,
    members: &[IdentityKey],
    admins: &[IdentityKey],
    name: &str,
) -> bool {
    let mut expected: Vec<&IdentityKey> = group.members.iter().filter(|m| *m != sender).collect();
    let mut got: Vec<&IdentityKey> = members.iter().collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    got.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    group.members.contains(sender)
        && !group.admins.contains(sender)
        && expected == got
        && admins == group.admins.as_slice()
        && name == group.name
}

/// The group state as announced.
fn state_of(group: &Group) -> GroupState {
    GroupState {
        id: group.id,
        version: group.version,
        name: group.name.clone(),
        members: group.members.iter().map(|m| *m.as_bytes()).collect(),
        admins: group.admins.iter().map(|a| *a.as_bytes()).collect(),
    }
}

/// A `SenderKey` body with the record's current distribution.
fn distribution_body(record: &SenderKeyRecord) -> Result<Body, ClientError> {
    let distribution = record
        .distribution()
        .ok_or_else(|| ClientError::Crypto("no chain of our own in the sender key".into()))?;
    Ok(Body::SenderKey(SenderKeyBytes(distribution.to_bytes())))
}
